"""``llmledger demo``: a local OpenAI-compatible server, a sample multi-tenant app, and the run that ties them together."""
