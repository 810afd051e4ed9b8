from tests.fakes.fixtures import fake_server, provider_env

__all__ = ["fake_server", "provider_env"]
