from system.chassis.serve import serve
from system.chassis.settings import load_settings
from system.services.notifications.app import build
from system.services.notifications.settings import NotificationsSettings

settings = load_settings(NotificationsSettings)
serve(lambda: build(settings), settings)
