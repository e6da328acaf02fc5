from system.chassis.serve import serve
from system.chassis.settings import load_settings
from system.services.users.app import build
from system.services.users.settings import UsersSettings

settings = load_settings(UsersSettings)
serve(lambda: build(settings), settings)
