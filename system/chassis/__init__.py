"""The service chassis: what every service of the system shares, and nothing else.

``create_app`` assembles a Litestar app from a service's typed settings and its route
handlers, with the database, telemetry, problem details, health checks, JWT checks, the
mesh client and the Kafka outbox/inbox wired in the same way for every service.
"""
