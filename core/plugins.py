"""Loading plugins and calling their hooks without letting one take the app down.

Built-in and third-party plugins load the same way: from the
``trivium.plugins`` entry-point group.  Core's own defaults are ordinary
``trylast`` hook implementations registered first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from typing import Any

import pluggy

from core import hookspecs
from core.config import PluginsSection
from core.config import load_settings
from core.content import ContentType

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trivium.plugins"


class PluginLoadError(Exception):
    """A plugin could not be imported or registered; the message names it."""


class DuplicateContentType(Exception):
    """Two plugins registered a content type under the same name."""


class UnknownContentType(LookupError):
    """No installed content type has this name."""


class StartupError(Exception):
    """A plugin's ``startup`` hook found the instance unable to run; the message says why.

    Unlike any other exception of a hook implementation, this one is not
    contained: ``create_app`` raises it, naming the plugin, and the ``trivium``
    command prints it without a traceback.  Raise it (or a subclass) for what
    an operator must fix before the instance can serve, and say how to fix it.

    .. versionadded:: 0.2
    """

    plugin: str = ""
    """The plugin that raised it, set by :meth:`PluginHost.call_startup`."""

    def __str__(self) -> str:
        text = super().__str__()
        return f"plugin {self.plugin}: {text}" if self.plugin else text


class InitInstanceFailed(Exception):
    """A plugin's ``init_instance`` failed on a new instance folder; the message names it."""


@dataclass
class PluginFailure:
    """One failed hook call, kept for the operator's plugin list."""

    plugin: str
    hook: str
    error: str
    at: float = field(default_factory=time.time)


@dataclass
class PluginInfo:
    """What ``trivium plugins`` and ``/api/v1/plugins`` show."""

    name: str
    version: str | None
    hooks: list[str]
    builtin: bool
    failures: int


class _CountingPluginManager(pluggy.PluginManager):
    """A pluggy manager that counts changes to its set of implementations.

    :meth:`PluginHost.call` caches each hook's implementation list and checks
    :attr:`generation` instead of asking pluggy for a fresh copy on every call;
    anything that can change a hook's implementations bumps it, including
    calls made on ``host.pm`` directly.
    """

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.generation = 0

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self.generation += 1
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self.generation += 1
        return super().unregister(plugin, name)

    def set_blocked(self, name: str) -> None:
        self.generation += 1
        super().set_blocked(name)

    def add_hookspecs(self, module_or_class: ModuleType | type) -> None:
        self.generation += 1
        super().add_hookspecs(module_or_class)


#: One implementation as :meth:`PluginHost.call` runs it: plugin name, function, argument names.
_Impl = tuple[str, Any, tuple[str, ...]]


class PluginHost:
    """The plugin manager of one app, with a safe call path and content-type registry."""

    def __init__(self, settings: PluginsSection, *, trace: bool = False) -> None:
        self.settings = settings
        self.pm = _CountingPluginManager("trivium")
        self._impls: dict[str, tuple[int, tuple[_Impl, ...]]] = {}
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.content_types: dict[str, ContentType] = {}
        self._content_owner: dict[str, str] = {}
        self._versions: dict[str, str | None] = {}
        self._builtin: set[str] = set()
        if trace:
            self.pm.trace.root.setwriter(log.debug)
            self.pm.enable_tracing()

    # ------------------------------------------------------------ loading

    def is_enabled(self, name: str) -> bool:
        """Apply instance.toml's ``[plugins] enabled/disabled`` lists."""
        if name in self.settings.disabled:
            return False
        return not self.settings.enabled or name in self.settings.enabled

    def register_builtin(self, module: ModuleType, name: str) -> None:
        """Register one of core's own default plugins (always loaded)."""
        self.pm.register(module, name=name)
        self._builtin.add(name)
        self._versions[name] = None

    def register(self, plugin: object, name: str, version: str | None = None) -> None:
        """Register a plugin object (tests use this for temporary plugins)."""
        self.pm.register(plugin, name=name)
        self._versions[name] = version

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for ctype, owner in list(self._content_owner.items()):
            if owner == name:
                del self._content_owner[ctype]
                self.content_types.pop(ctype, None)

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        """Import and register every enabled plugin of the ``trivium.plugins`` group.

        :raise PluginLoadError: a plugin fails to import (start-up must not
            continue with half a plugin set).
        """
        eps = entry_points
        if eps is None:
            eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in eps:
            if not self.is_enabled(ep.name):
                log.info("plugin=%s status=disabled", ep.name)
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: {exc}"
                ) from exc
            version = ep.dist.version if ep.dist is not None else None
            self.register(plugin, ep.name, version)
            log.info("plugin=%s version=%s status=loaded", ep.name, version)

    def check(self) -> None:
        """Fail loudly on misspelt hook implementations (``pm.check_pending``)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(str(exc)) from exc

    # ------------------------------------------------------------ calling

    def implementations(self, hook: str) -> tuple[_Impl, ...]:
        """``hook``'s implementations, most specific first, as ``(plugin, function, argnames)``.

        For core code that treats each plugin's answer or failure on its own
        (as :meth:`call` does): call ``function(*[kwargs[a] for a in argnames])``.
        Cached per registration generation.
        """
        generation = self.pm.generation
        cached = self._impls.get(hook)
        if cached is not None and cached[0] == generation:
            return cached[1]
        caller = getattr(self.pm.hook, hook)
        impls = tuple(
            (impl.plugin_name, impl.function, tuple(impl.argnames))
            for impl in reversed(caller.get_hookimpls())
        )
        self._impls[hook] = (generation, impls)
        return impls

    def content_type_owner(self, name: str) -> str | None:
        """The plugin that registered the content type ``name``, or None."""
        return self._content_owner.get(name)

    def call(self, hook: str, *, firstresult: bool = False, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook`` on its own, most-specific first.

        pluggy stops a hook call at the first exception; here each
        implementation runs separately, and one that raises is logged with the
        plugin's name, recorded in :attr:`failures` and skipped.

        :param firstresult: stop at (and return only) the first non-None result.
        :return: the non-None results, in call order.
        """
        results: list[Any] = []
        for plugin_name, function, argnames in self.implementations(hook):
            args = [kwargs[name] for name in argnames]
            try:
                result = function(*args)
            except Exception as exc:
                self.record_failure(plugin_name, hook, exc)
                continue
            if result is None:
                continue
            results.append(result)
            if firstresult:
                break
        return results

    def call_startup(self, app: Flask) -> None:
        """Call every ``startup`` implementation, most-specific first.

        A failing implementation is contained as in :meth:`call`, except a
        :class:`StartupError`, which stops here.

        :raise StartupError: a plugin refuses to start; its ``plugin`` names it.
        """
        kwargs = {"app": app}
        for plugin_name, function, argnames in self.implementations("startup"):
            args = [kwargs[name] for name in argnames]
            try:
                function(*args)
            except StartupError as exc:
                exc.plugin = plugin_name
                log.error("plugin=%s hook=startup error=%r status=refused", plugin_name, exc)
                raise
            except Exception as exc:
                self.record_failure(plugin_name, "startup", exc)

    def call_lists(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a ``register_*`` hook and flatten the lists, tagging each with its plugin."""
        caller = getattr(self.pm.hook, hook)
        out: list[tuple[str, Any]] = []
        for impl in reversed(caller.get_hookimpls()):
            args = [kwargs[name] for name in impl.argnames]
            try:
                result = impl.function(*args)
            except Exception as exc:
                self.record_failure(impl.plugin_name, hook, exc)
                continue
            for value in result or []:
                out.append((impl.plugin_name, value))
        return out

    def record_failure(self, plugin: str, hook: str, exc: BaseException) -> None:
        """Log and remember a failed hook implementation."""
        log.error("plugin=%s hook=%s error=%r", plugin, hook, exc, exc_info=exc)
        self.failures.append(PluginFailure(plugin, hook, f"{type(exc).__name__}: {exc}"))
        del self.failures[:-200]

    # ------------------------------------------------------------ content types

    def collect_content_types(self) -> None:
        """Instantiate every registered content type; refuse duplicate names.

        :raise DuplicateContentType: two plugins claim one name.
        :raise PluginLoadError: a class lacks ``name`` or is not a ContentType.
        """
        for plugin, cls in self.call_lists("register_content_types"):
            if not (isinstance(cls, type) and issubclass(cls, ContentType)) or not cls.name:
                raise PluginLoadError(
                    f"plugin {plugin!r} hook register_content_types returned {cls!r}: "
                    "expected a ContentType subclass with a name"
                )
            if cls.name in self._content_owner and self._content_owner[cls.name] != plugin:
                raise DuplicateContentType(
                    f"content type {cls.name!r} registered by both "
                    f"{self._content_owner[cls.name]!r} and {plugin!r}"
                )
            self._content_owner[cls.name] = plugin
            self.content_types[cls.name] = cls(self.settings.settings_for(plugin))

    def content_type(self, name: str) -> ContentType:
        """Return the content type called ``name``.

        :raise UnknownContentType: none is installed under that name.
        """
        try:
            return self.content_types[name]
        except KeyError:
            raise UnknownContentType(name) from None

    # ------------------------------------------------------------ listing

    def info(self) -> list[PluginInfo]:
        """Describe each loaded plugin for operators."""
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin()):
            if plugin is None:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            out.append(
                PluginInfo(
                    name=name,
                    version=self._versions.get(name),
                    hooks=hooks,
                    builtin=name in self._builtin,
                    failures=sum(1 for f in self.failures if f.plugin == name),
                )
            )
        return out


def init_instance(root: Path) -> None:
    """Call ``init_instance`` on the plugins of the instance just written at ``root``.

    What ``trivium init`` and ``trivium demo`` do after writing a new instance's
    files and before its first start (federation generates the keys); no app
    is built.

    :raise core.config.ConfigError: the new instance's settings are invalid.
    :raise PluginLoadError: a plugin cannot be loaded.
    :raise InitInstanceFailed: an implementation raised; the files written stay.
    """
    settings = load_settings(root)
    host = PluginHost(settings.plugins)
    host.load_entry_points()
    host.check()
    host.call("init_instance", path=str(root.resolve()), settings=settings)
    if host.failures:
        failed = "; ".join(f"{f.plugin}: {f.error}" for f in host.failures)
        raise InitInstanceFailed(f"{root}: init_instance failed ({failed})")
