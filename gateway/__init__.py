"""The HTTP server: OpenAI protocol, request parsing, batching engine, auth and limits."""
