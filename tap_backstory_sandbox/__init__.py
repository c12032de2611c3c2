"""tap-backstory sandbox: a local HTTP emulator of the Backstory bulk APIs and the ContactBased Data APIs.

    from tap_backstory_sandbox import Sandbox, SandboxSettings, DEMO_CREDENTIALS
    with Sandbox(SandboxSettings(today=date(2026, 3, 1))) as sb:
        sb.backstory_url, sb.contactbased_url, sb.tap_config()

Modules: ``server`` (HTTP + Sandbox), ``backstory``, ``contactbased``, ``data`` (generators and expectation
helpers), ``faults``, ``settings``, ``state``; ``python -m tap_backstory_sandbox --help`` for the CLI.
"""

from .server import Sandbox
from .settings import DEMO_CREDENTIALS, FEED_A_ID, FEED_B_ID, SandboxSettings

__all__ = ["DEMO_CREDENTIALS", "FEED_A_ID", "FEED_B_ID", "Sandbox", "SandboxSettings"]
