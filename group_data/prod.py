# Production GPU hosts: the seed's primary stack (deepseek-coder-33B-instruct-AWQ + Mistral-7B
# Instruct v0.2 AWQ; the seed's Mistral-7B-v0.1-AWQ is a base model, not an instruct one).
llmhost_stack = "primary"
# The catalogue has no verified commit sha for these two TheBloke repos: pin them here from each
# repo's "Files and versions" page; preflight refuses to deploy an unpinned model.
llmhost_service_overrides = {
    # "coder": {"model": {"revision": "<40-hex sha>"}},
    # "general": {"model": {"revision": "<40-hex sha>"}},
}
