"""Knowledge distillation (``distill``): a small student learns a text classifier's logits. Its runs are
text classifiers (the student's run.json is text_classification's, naming the teacher), exported and
served as any other."""

from __future__ import annotations

from zoo.tasks import Task

TASK = Task(
    name="distillation",
    description="a smaller text classifier trained on a teacher run's logits",
    produces="text_classification",
    recipes={"distill": "zoo.recipes.distill"},
    serializable=("zoo.models.bert", "zoo.models.text_task", "zoo.tokenizers"),
)
