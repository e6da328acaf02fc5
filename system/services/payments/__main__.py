from system.chassis.serve import serve
from system.chassis.settings import load_settings
from system.services.payments.app import build
from system.services.payments.settings import PaymentsSettings

settings = load_settings(PaymentsSettings)
serve(lambda: build(settings), settings)
