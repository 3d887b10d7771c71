"""Developer tools, not installed and not shipped in the image: the mesh runner (`make run`,
the tests' and benchmarks' meshes), its PostgreSQL/RabbitMQ scratch spaces, and the PSP
stand-ins (the sandbox PSP, localstripe with Stripe's test-card declines)."""
