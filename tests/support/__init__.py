"""Test support: real servers, real processes, the real grpcurl."""
