"""What a form page needs to show after a refused submission: the input and the errors.

Views build a :class:`FormState` from ``request.form``, fill ``errors`` when a
check fails (or with :meth:`FormState.fail` from a :class:`core.errors.Problem`)
and render the page again with status 400/422; the macros in
``templates/macros/forms.html`` show each field's kept value and its errors.
Passwords and secrets are never sent back (``SECRET_FIELDS``).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from core.errors import Problem

SECRET_FIELDS = frozenset(
    {"password", "current_password", "new_password", "new_password2", "csrf_token", "code"}
)


@dataclass
class FormState:
    """A form's submitted values and its errors (per field, and for the whole form)."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    form_errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, data: Mapping[str, Any], fields: Iterable[str] | None = None) -> FormState:
        """Keep the submitted (non-secret) values of ``fields`` (default: all)."""
        names = list(fields) if fields is not None else list(data.keys())
        return cls(
            values={
                name: str(data.get(name, "")).strip() for name in names if name not in SECRET_FIELDS
            }
        )

    def get(self, name: str, default: str = "") -> str:
        """The kept value of ``name``."""
        return self.values.get(name, default)

    def add(self, name: str | None, message: str) -> None:
        """Record an error for field ``name`` (None: for the whole form)."""
        if name is None:
            self.form_errors.append(message)
        else:
            self.errors.setdefault(name, []).append(message)

    def fail(self, problem: Problem, field_names: Mapping[str, str] | None = None) -> None:
        """Record a refused action's problem: on its fields if it names them, else on the form.

        :param problem: the refusal, with optional ``errors=[{"loc", "msg"}]``.
        :param field_names: maps a problem's ``loc`` (``"new_password"``) to a
            form field when they differ, or the field that the whole problem is
            about under the key ``"*"``.
        """
        mapping = dict(field_names or {})
        located = False
        for err in problem.extra.get("errors") or []:
            loc = str(err.get("loc", "")).split(".")[-1]
            name = mapping.get(loc, loc)
            if name and (name in self.values or name in mapping.values() or loc in mapping):
                self.add(name, str(err.get("msg", problem.detail)))
                located = True
        if not located:
            self.add(mapping.get("*"), problem.detail)

    @property
    def ok(self) -> bool:
        """True while no error has been recorded."""
        return not self.errors and not self.form_errors
