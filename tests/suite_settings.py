"""Values the whole suite shares (a module, not conftest: conftest names collide between test folders)."""

TEST_TOKEN = "test-token-0123456789abcdef"
TEST_FACTORIES = "edged_jobs_test_model"  # EDGED_MODEL_FACTORIES of the tests: the job tests' model module
