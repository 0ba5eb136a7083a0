"""Take each host to two health-gated vLLM services: `pyinfra INVENTORY deploy.py`."""

from llmhost.deploy import llmhost

llmhost()
