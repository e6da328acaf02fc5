"""The invariant checker notices a broken system: products is started with a deliberate
defect (it acknowledges ``order.confirmed`` without committing the stock), and the checker
must report exactly what a user would care about — and only that."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from harness.client import admin as login_admin
from harness.client import connect
from harness.invariants import settle
from harness.localstack import free_port_base, local_stack
from harness.target import Target, local_target
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings

pytestmark = [pytest.mark.saga, pytest.mark.integration, pytest.mark.slow]
DEFECT = {"products": {"PRODUCTS_DEFECTS": json.dumps(["drop:order.confirmed"])}}


@pytest.fixture(scope="module")
def broken_target(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Target]:
    paths = StackPaths.for_stack("defect", tmp_path_factory.mktemp("defect-home"))
    database = pytestconfig.getoption("harness_database")  # the suite's SQLite or PostgreSQL
    settings = StackSettings(name="defect", env=DEFECT, database=database)
    settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
    with local_stack(paths, settings) as state:
        yield local_target(paths, state)


async def test_a_lost_order_confirmed_event_is_reported_as_unconserved_stock(
    broken_target: Target,
) -> None:
    async with connect(broken_target) as api:
        admin = await login_admin(api, broken_target)
        lamp = await admin.create_product(stock=3)
        placed = await admin.place_order({lamp.id: 2})
        assert (await admin.wait_terminal(placed.order_id)).status == "CONFIRMED"
        report = await settle(admin, within=10)
    assert not report.ok
    found = {(v.invariant, v.entity, v.expected, v.actual) for v in report.violations}
    product = f"product {lamp.id} ({lamp.sku})"
    assert found == {
        ("stock-conserved", product, "reserved = 0 at rest", "2"),
        ("stock-conserved", product, "sold = units in confirmed orders (2)", "0"),
    }, report.render()
    assert report.attempts > 1, "the checker re-reads until its deadline before reporting"
