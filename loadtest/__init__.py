"""Load tests of the gateway: a fast stub upstream and the gateway-overhead benchmark (HTTP only)."""
