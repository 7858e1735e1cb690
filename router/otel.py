"""`router.otel.OpenTelemetryListener`: the public name of the OpenTelemetry listener
(`pip install 'failover-router[otel]'`); it lives with the other listeners in observe/.
`import router` does not import this module, nor opentelemetry."""

from .observe.otel import OpenTelemetryListener

__all__ = ["OpenTelemetryListener"]
