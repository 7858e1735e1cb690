"""`router.metrics.PrometheusListener`: the public name of the Prometheus listener
(`pip install 'failover-router[metrics]'`); it lives with the other listeners in observe/."""

from .observe.metrics import CIRCUIT_STATE_VALUES, PrometheusListener

__all__ = ["PrometheusListener", "CIRCUIT_STATE_VALUES"]
