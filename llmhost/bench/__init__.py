"""``llmhost bench``: both services loaded on their host against their latency targets, alone
and together, direct and through the gateway (issue 25)."""
