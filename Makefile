# The README's commands. Every target does its own set-up through `bootstrap`.
.PHONY: bootstrap up down status test test-unit lint

HARNESS := .venv/bin/harness
PYTEST_ARGS ?= -n auto

bootstrap:
	@bash system/runtime/bootstrap.sh

# Main job (for now): bring the whole local stack up and print what runs where.
up: bootstrap
	@$(HARNESS) up

down:
	@$(HARNESS) down

status:
	@$(HARNESS) status

# The test command of the README and of CI: unit tests and the real-stack integration
# tests (each integration session starts its own stack on free ports and stops it).
test: bootstrap
	@.venv/bin/pytest $(PYTEST_ARGS)

test-unit: bootstrap
	@.venv/bin/pytest $(PYTEST_ARGS) tests/unit

lint: bootstrap
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
