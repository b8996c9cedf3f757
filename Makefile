.PHONY: demo test setup bench clean

# Build the default model, index the bundled demo catalog, serve http://127.0.0.1:8000
demo:
	bash scripts/setup.sh
	.venv/bin/lookalike demo

# Set up and run the whole test suite (what CI runs)
test:
	bash scripts/test.sh

setup:
	bash scripts/setup.sh --test

clean:
	rm -rf var models/*/ index/*/ artifacts
