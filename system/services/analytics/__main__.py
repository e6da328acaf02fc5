from system.chassis.serve import serve
from system.chassis.settings import load_settings
from system.services.analytics.app import build
from system.services.analytics.settings import AnalyticsSettings

settings = load_settings(AnalyticsSettings)
serve(lambda: build(settings), settings)
