# pyinfra reads this before the deploy: refuse a pyinfra other than the one llmhost is tested with.
REQUIRE_PYINFRA_VERSION = "~=3.10.0"
