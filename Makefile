# The README's commands. Every target does its own set-up through `bootstrap`.
.PHONY: bootstrap up down status test test-postgres test-unit lint

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
# pytest exits 5 when it collected no test; make reports any failure as 2, so say why.
PYTEST = .venv/bin/pytest $(PYTEST_ARGS)
CHECK_COLLECTED = status=$$?; [ $$status -ne 5 ] || echo "pytest collected no test" >&2; exit $$status

test: bootstrap
	@$(PYTEST); $(CHECK_COLLECTED)

# The integration suite again, every service on the stack's PostgreSQL server (CI runs
# both; locally `harness up --database postgres` or HARNESS_DATABASE=postgres).
test-postgres: bootstrap
	@HARNESS_DATABASE=postgres $(PYTEST) -m system; $(CHECK_COLLECTED)

test-unit: bootstrap
	@.venv/bin/pytest $(PYTEST_ARGS) tests/unit

lint: bootstrap
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
