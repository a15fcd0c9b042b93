"""Background jobs of the quiz plugin: grading attempts whose time ran out.

An attempt with a deadline schedules :func:`close_overdue` for just after it
(deadline plus grace), so an attempt the learner abandoned is graded from the
answers saved in time and shows in the gradebook without the learner coming
back.  At least once: the job re-reads the attempt and does nothing if it
was already submitted.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session
from core.db import utcnow
from core.models import Course
from core.models import Item
from core.models import User
from core.progress import announce
from core.tasks import actor
from core.tasks import get_jobs
from plugins.quiz import attempts
from plugins.quiz.models import Attempt

log = logging.getLogger(__name__)

CLOSE_OVERDUE = "quiz.close_overdue"


@actor(CLOSE_OVERDUE, queue="quiz", max_retries=5)
def close_overdue(attempt_id: str) -> None:
    """Grade the attempt ``attempt_id`` (a public id) if it is still open after its deadline."""
    sess = session()
    attempt = sess.scalar(select(Attempt).where(Attempt.public_id == attempt_id).with_for_update())
    now = utcnow()
    if attempt is None or attempt.status != "in_progress" or not attempts.overdue(attempt, now):
        # Submitted already, deleted with its course, or (clock skew) not due yet:
        # a learner's next request closes an overdue attempt anyway.
        sess.rollback()
        return
    user = sess.get_one(User, attempt.user_id)
    item = sess.get_one(Item, attempt.item_id)
    course = sess.get_one(Course, attempt.course_id)
    outcome = attempts.finish(sess, attempt, user, item, course, now)
    sess.commit()
    if outcome is not None:
        announce(outcome)
    log.info("job=%s attempt=%s status=%s", CLOSE_OVERDUE, attempt_id, attempt.status)


def schedule_close(sess: Session, attempt: Attempt, now: datetime) -> None:
    """Run :func:`close_overdue` just after ``attempt``'s deadline, if ``sess`` commits."""
    limit = attempts.effective_deadline(attempt)
    if limit is None:
        return
    delay_ms = max(0, int((limit - now).total_seconds() * 1000)) + 1000
    get_jobs().enqueue_on_commit(sess, CLOSE_OVERDUE, (attempt.public_id,), delay_ms=delay_ms)
