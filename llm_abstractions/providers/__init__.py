"""Model clients over the providers' official async SDKs, one module per API.

``gemini`` (google-genai), ``claude`` (anthropic), ``gpt`` (openai) and
``openai_compatible`` (openai, pointed at Groq, xAI, Ollama, vLLM, LM Studio or any
``base_url``). Importing this package imports no SDK: each provider imports its SDK
when it builds its client.
"""
