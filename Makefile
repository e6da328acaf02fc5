# The README's commands. Every target does its own set-up through `bootstrap`.
.PHONY: bootstrap up down status test test-postgres test-contracts-live test-unit lint

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

# The test command of the README and of CI: unit tests, the contract suite, the
# real-stack integration tests and the saga / fault scenarios (each session starts its own
# stacks on free ports and stops them; HARNESS_TARGET=attach|remote tests another system).
# pytest exits 5 when it collected no test; make reports any failure as 2, so say why.
PYTEST = .venv/bin/pytest $(PYTEST_ARGS) --alluredir=reports/allure-results
CHECK_COLLECTED = status=$$?; [ $$status -ne 5 ] || echo "pytest collected no test" >&2; exit $$status

test: bootstrap
	@$(PYTEST); $(CHECK_COLLECTED)

# The suites that drive the real services again (integration and scenarios), every
# service on the stack's PostgreSQL server (CI runs both; locally HARNESS_DATABASE=postgres).
test-postgres: bootstrap
	@HARNESS_DATABASE=postgres $(PYTEST) -m "system or saga"; $(CHECK_COLLECTED)

# The contract suite against a live stack through the gateway (its own throw-away stack:
# fuzzing leaves junk data that the scenarios' whole-system invariant checks would see).
test-contracts-live: bootstrap
	@$(PYTEST) contracts --contract-target=live; $(CHECK_COLLECTED)

test-unit: bootstrap
	@.venv/bin/pytest $(PYTEST_ARGS) tests/unit

lint: bootstrap
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
