"""pyinfra facts llmhost needs beyond pyinfra's own (``host.get_fact(NvidiaGpus)``)."""
