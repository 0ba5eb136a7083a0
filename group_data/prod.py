# Production GPU hosts: the seed's primary stack (deepseek-coder-33B-instruct-AWQ + Mistral-7B
# Instruct v0.2 AWQ; the seed's Mistral-7B-v0.1-AWQ is a base model, not an instruct one), each
# at the revision the catalogue pins (llmhost/plan/catalogue/, with where each sha was read).
llmhost_stack = "primary"
