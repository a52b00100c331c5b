"""Import every ORM module so that ``Base.metadata`` is complete (Alembic, tests)."""

from app.audit import models as _audit  # noqa: F401
from app.auth import models as _auth  # noqa: F401
from app.console import models as _console  # noqa: F401
from app.datasets import models as _datasets  # noqa: F401
from app.db.base import Base
from app.forget_requests import models as _forget_requests  # noqa: F401
from app.notifications import models as _notifications  # noqa: F401
from app.registry import models as _registry  # noqa: F401
from app.subjects import models as _subjects  # noqa: F401

metadata = Base.metadata
