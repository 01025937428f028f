"""Which delivery strategy fits a team: ranked advice with reasons, and a starter spec.

    recommend(inputs)              the strategies ranked for a risk profile, with reasons
    load_inputs(path)              inputs from a profile file or a Service spec
    starter_spec(strategy, inputs) a commented Service spec for the chosen strategy
    WORDS                          the usual guidance, in words, for `compare` to check

Pure advice: this package reads the inputs and the guidance and nothing else.
It never imports the simulator (its sibling in the layers); `stagewise
compare` puts the two side by side.
"""

from stagewise.advisor.inputs import LEVELS, Inputs, Level, inputs_from_text, load_inputs
from stagewise.advisor.rules import SCHEMA_ADVICE, STRATEGIES, Ranked, Recommendation, recommend
from stagewise.advisor.starter import starter_spec
from stagewise.advisor.words import WORDS, Words

__all__ = [
    "LEVELS",
    "SCHEMA_ADVICE",
    "STRATEGIES",
    "WORDS",
    "Inputs",
    "Level",
    "Ranked",
    "Recommendation",
    "Words",
    "inputs_from_text",
    "load_inputs",
    "recommend",
    "starter_spec",
]
