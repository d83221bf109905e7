"""What kmigrate's commands import when they run, imported at once.

The CLI imports a command's modules only when the command runs (a cheap start). A test process
that forks many commands from one server (tests/hostile_driver.py's fork server,
tests/harness/zygote.py) imports this module there first, so each forked child runs its
command without importing them again.
"""

import httpcore  # noqa: F401  (httpx's transport, imported on a client's first request)

import kmigrate.api  # noqa: F401
import kmigrate.cli  # noqa: F401
import kmigrate.cli.project  # noqa: F401
import kmigrate.cli.run  # noqa: F401
import kmigrate.cli.sandbox  # noqa: F401
import kmigrate.client  # noqa: F401
import kmigrate.remote.lease  # noqa: F401
import kmigrate.remote.session  # noqa: F401
import kmigrate.render  # noqa: F401
import kmigrate.runner  # noqa: F401
import kmigrate.sandbox.server  # noqa: F401
import kmigrate.savedplan  # noqa: F401
