"""The task protocols: what a task states it provides, and what the code that runs it relies on."""

import pytest

from dftlab.data.datamodule import DataModule
from dftlab.data.game24_task import Game24Task
from dftlab.data.text_task import TextTask
from dftlab.errors import ConfigError
from dftlab.evaluation.math_tasks import MathTask
from dftlab.tasks import EvalTask, TrainTask


def test_the_tasks_state_what_they_provide():
    # protocols with data members refuse issubclass(); the tasks subclass them explicitly
    assert {TrainTask, EvalTask} <= set(Game24Task.__mro__)
    assert TrainTask in TextTask.__mro__ and EvalTask in MathTask.__mro__


def test_score_many_defaults_to_score_per_completion():
    class Parity(EvalTask):
        name = "parity"
        test_splits = {"test": [{"prompt": "1"}, {"prompt": "2"}]}

        def max_new_tokens(self):
            return 1

        def score(self, row, completion):
            ok = int(row["prompt"]) % 2 == int(completion)
            return {"correct": ok, "well_formed": True}

    scores = Parity().score_many([{"prompt": "1"}, {"prompt": "2"}], ["1", "1"])
    assert [s["correct"] for s in scores] == [True, False]


def test_a_task_without_training_examples_is_refused():
    class OnlyTests:
        name = "only_tests"

    with pytest.raises(ConfigError, match=r"data.task \(OnlyTests\) is not a training task"):
        DataModule(OnlyTests())
