"""Federation: instance identity and keys, peering, signed requests, the inbox, catalog sync.

A plugin like any other: the ``trivium.plugins`` entry point names this
package, and these are its hook implementations.
"""

from federation.plugin import catalog_changed
from federation.plugin import demo_instances_started
from federation.plugin import init_instance
from federation.plugin import register_actors
from federation.plugin import register_blueprints
from federation.plugin import register_commands
from federation.plugin import register_migrations
from federation.plugin import startup
from federation.plugin import template_slot

__all__ = [
    "catalog_changed",
    "demo_instances_started",
    "init_instance",
    "register_actors",
    "register_blueprints",
    "register_commands",
    "register_migrations",
    "startup",
    "template_slot",
]
