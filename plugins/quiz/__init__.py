"""Quiz plugin: question banks, many item types, server-side grading, GIFT import/export.

A plugin like any other: the ``trivium.plugins`` entry point names this
package, and these are its hook implementations.
"""

from plugins.quiz.plugin import export_course_data
from plugins.quiz.plugin import export_user_data
from plugins.quiz.plugin import import_course_data
from plugins.quiz.plugin import permission_allowed
from plugins.quiz.plugin import register_actors
from plugins.quiz.plugin import register_blueprints
from plugins.quiz.plugin import register_content_types
from plugins.quiz.plugin import register_migrations
from plugins.quiz.plugin import template_slot
from plugins.quiz.plugin import withhold_from_export

__all__ = [
    "export_course_data",
    "export_user_data",
    "import_course_data",
    "permission_allowed",
    "register_actors",
    "register_blueprints",
    "register_content_types",
    "register_migrations",
    "template_slot",
    "withhold_from_export",
]
