"""llmhost's operations in pyinfra-testing style: fake facts in, exact commands out.

Each folder beside this module holds one operation's cases (changed, no-op, error).
"""

from pathlib import Path

from pyinfra_testing.operations import make_operation_tests

HERE = Path(__file__).parent

TestVenvPinned = make_operation_tests("llmhost.operations", "venv.pinned", HERE / "venv.pinned")
TestModelsHub = make_operation_tests("llmhost.operations", "models.hub", HERE / "models.hub")
TestServicesHealthy = make_operation_tests(
    "llmhost.operations", "services.healthy", HERE / "services.healthy"
)
TestServicesRetired = make_operation_tests(
    "llmhost.operations", "services.retired", HERE / "services.retired"
)
TestSnapshotsPruned = make_operation_tests(
    "llmhost.operations", "snapshots.pruned", HERE / "snapshots.pruned"
)
TestSecretsApiKey = make_operation_tests(
    "llmhost.operations", "secrets.generated_api_key", HERE / "secrets.generated_api_key"
)
TestGatewayClientKeys = make_operation_tests(
    "llmhost.gateway", "operations.client_keys", HERE / "gateway.client_keys"
)
TestGatewayCheckedConfig = make_operation_tests(
    "llmhost.gateway", "operations.checked_config", HERE / "gateway.checked_config"
)
TestServicesActivated = make_operation_tests(
    "llmhost.operations", "services.activated", HERE / "services.activated"
)
TestGatewaySelfSigned = make_operation_tests(
    "llmhost.gateway", "operations.self_signed", HERE / "gateway.self_signed"
)
TestJobsFinished = make_operation_tests(
    "llmhost.operations", "jobs.finished", HERE / "jobs.finished"
)
TestPathsFiles = make_operation_tests("llmhost.operations", "paths.files", HERE / "paths.files")
TestPathsDirectories = make_operation_tests(
    "llmhost.operations", "paths.directories", HERE / "paths.directories"
)
