"""The lab host: disposable systemd-nspawn guests and the tiny models they serve.

Beside the product, not in it: ``llmhost`` (the deploy, the checks) never imports this package;
the ``llmhost lab`` command, the lab's inventory and group data, and the tests do.
"""
