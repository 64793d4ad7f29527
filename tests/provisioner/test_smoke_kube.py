import pytest

from csi.errors import InProgress
from tests.provisioner.conftest import template, wait_for

pytestmark = pytest.mark.kube


def test_smoke(env):
    env.runner()
    provider = env.provider()
    with pytest.raises(InProgress):
        provider.ensure_file_system("smoke", template())
    endpoint = wait_for(lambda: provider.ensure_file_system("smoke", None), 20)
    print(endpoint, env.event_reasons("smoke"), env.standin.errors[:3])
