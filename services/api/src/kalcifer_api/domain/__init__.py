"""Plain-Python rules of the API service: no gRPC, no SQL."""
