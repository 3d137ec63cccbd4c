"""gRPC plumbing shared by the three services: error mapping, auth, server bootstrap, client channels."""
