"""Search under a budget: Optuna trials of compression chains, every one measured as a run measures its models.

Layer: between ``api`` (which wires the stages and hands over an evaluator) and ``recipe``. The space is built from
the method registry (:mod:`.space`, :mod:`.methods`, :mod:`.spacefile`), the study and its objective are in
:mod:`.study`, the one "within budget" rule in :mod:`.budget`, and the outputs in :mod:`.results`.
Optuna is imported only when a search runs.
"""

from slimship.search.budget import BudgetCheck, judge_budget
from slimship.search.duration import parse_duration
from slimship.search.methods import default_space
from slimship.search.space import SPACES, Choice, MethodSpace, Range, SearchSpace, register_space
from slimship.search.spacefile import load_space, space_from_dict

__all__ = ["BudgetCheck", "Choice", "MethodSpace", "Range", "SPACES", "SearchSpace", "default_space", "judge_budget",
           "load_space", "parse_duration", "register_space", "space_from_dict"]
