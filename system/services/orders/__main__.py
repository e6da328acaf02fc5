from system.chassis.serve import serve
from system.chassis.settings import load_settings
from system.services.orders.app import build
from system.services.orders.settings import OrdersSettings

settings = load_settings(OrdersSettings)
serve(lambda: build(settings), settings)
