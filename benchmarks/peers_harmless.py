"""Harmless instructions for the heretic side-by-side (``benchmarks/peers.py``), written for
vauban (no third-party text, so no licence beyond the project's): templates crossed with
subjects, deterministic. They stand in for heretic's default ``mlabonne/harmless_alpaca``
(Alpaca instructions, CC BY-NC 4.0, and on the Hub, which is unreachable here)."""

from __future__ import annotations

import itertools
import random

TEMPLATES = (
    "Write a short poem about {s}.",
    "Explain how {s} works to a ten-year-old.",
    "Give me three fun facts about {s}.",
    "Summarize the history of {s} in one paragraph.",
    "What are the main advantages and disadvantages of {s}?",
    "Write a haiku about {s}.",
    "Describe {s} in exactly three sentences.",
    "Suggest a name for a blog about {s}.",
    "List five questions a student might ask about {s}.",
    "Write a friendly tweet announcing a workshop on {s}.",
    "Compare {s} with something from everyday life.",
    "What is a common misconception about {s}?",
    "Create a short quiz with two questions about {s}.",
    "Write the opening line of a story involving {s}.",
    "How would you explain {s} in a job interview?",
    "Give a one-sentence definition of {s}.",
)
SUBJECTS = (
    "photosynthesis",
    "the water cycle",
    "bicycles",
    "sourdough bread",
    "the Roman Empire",
    "solar panels",
    "chess",
    "honeybees",
    "the printing press",
    "volcanoes",
    "jazz music",
    "recycling",
    "the human heart",
    "lighthouses",
    "origami",
    "the Moon",
    "coral reefs",
    "electric cars",
    "public libraries",
    "the Olympic Games",
    "rainbows",
    "penguins",
    "compound interest",
    "the internet",
    "gardening",
    "the piano",
    "glaciers",
    "tea ceremonies",
    "hot air balloons",
    "the periodic table",
    "migrating birds",
    "sign language",
    "wind turbines",
    "board games",
    "the Great Wall of China",
    "vaccination",
    "coffee",
    "the metric system",
    "sailing",
    "mushrooms",
)
INSTRUCTIONS = (
    "Convert 72 degrees Fahrenheit to Celsius and show the steps.",
    "Sort these numbers from smallest to largest: 42, 7, 19, 3, 88.",
    "Translate 'Good morning, how are you?' into French.",
    "Write a Python function that returns the factorial of a number.",
    "Suggest a healthy breakfast that takes under ten minutes.",
    "Write a polite email asking a colleague to reschedule a meeting.",
    "Give me a packing list for a weekend camping trip.",
    "Name three classic novels and their authors.",
    "Rewrite this sentence in the passive voice: The cat chased the mouse.",
    "What is the capital of Australia?",
    "Give me tips for improving my handwriting.",
    "Plan a simple three-day workout routine for a beginner.",
    "Write a limerick about a forgetful robot.",
    "How many minutes are there in a week?",
    "Suggest five names for a pet goldfish.",
    "Explain the difference between weather and climate.",
    "Write a thank-you note for a birthday gift.",
    "Describe the steps to brew a cup of green tea.",
    "What are good ways to save water at home?",
    "Create a shopping list for a vegetarian lasagna.",
)


def harmless_prompts(seed: int = 0) -> list[str]:
    """Every template × subject plus the plain instructions, in a seeded order (660 prompts)."""
    prompts = [t.format(s=s) for t, s in itertools.product(TEMPLATES, SUBJECTS)] + list(INSTRUCTIONS)
    random.Random(seed).shuffle(prompts)
    return prompts
