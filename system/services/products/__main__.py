from system.chassis.serve import serve
from system.chassis.settings import load_settings
from system.services.products.app import build
from system.services.products.settings import ProductsSettings

settings = load_settings(ProductsSettings)
serve(lambda: build(settings), settings)
