__version__ = "0.0.1"

# loranb.errors installs its narrow filter of library notices (see the errors lesson) before any module imports a library
from . import errors as _errors  # noqa: E402,F401
