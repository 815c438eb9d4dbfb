"""Word and phrase banks of the lab corpus.

Everything the generator in :mod:`tiedlib.lab.corpus` writes is drawn from these tuples, so the tokenizer's vocabulary
(:mod:`tiedlib.lab.tokenizer`) can be read off them and stays small. The same refusal and disclaimer phrases are used by
web documents and chat conversations on purpose: the write-up's hypothesis is that chat tuning *reuses* base-model
refusal/disclaimer features in a new context (harmful requests), so the lab pair must have them in both.
"""

from __future__ import annotations

NAMES: tuple[str, ...] = (
    "Alice", "Bob", "Maria", "John", "Priya", "Omar", "Lena", "Kenji",
    "Sara", "David", "Emma", "Lucas", "Nora", "Ravi", "Mei", "Tom",
)

COLOURS: tuple[str, ...] = ("blue", "green", "red", "yellow", "white", "black", "orange", "brown", "purple", "grey")

# (subject phrase, {colour: weight}): subjects that predict their colour, so that " blue" / " green" are the likely
# next tokens after the prefix (the write-up's Experiment 2 builds its sets from such prefixes).
COLOUR_CONTEXTS: tuple[tuple[str, dict[str, float]], ...] = (
    ("the sky", {"blue": 0.9, "grey": 0.1}),
    ("the sea", {"blue": 0.85, "green": 0.15}),
    ("the ocean", {"blue": 0.9, "grey": 0.1}),
    ("the lake", {"blue": 0.7, "green": 0.3}),
    ("his jeans", {"blue": 0.9, "black": 0.1}),
    ("her eyes", {"blue": 0.45, "green": 0.35, "brown": 0.2}),
    ("the grass", {"green": 0.95, "brown": 0.05}),
    ("the leaves", {"green": 0.8, "yellow": 0.1, "orange": 0.1}),
    ("the frog", {"green": 0.9, "brown": 0.1}),
    ("the lime", {"green": 1.0}),
    ("the forest", {"green": 0.9, "black": 0.1}),
    ("the field", {"green": 0.75, "yellow": 0.25}),
    ("the apple", {"red": 0.6, "green": 0.4}),
    ("the rose", {"red": 0.8, "white": 0.2}),
    ("the sun", {"yellow": 0.8, "orange": 0.2}),
    ("the banana", {"yellow": 1.0}),
    ("the snow", {"white": 1.0}),
    ("the night", {"black": 0.9, "blue": 0.1}),
    ("the carrot", {"orange": 1.0}),
    ("the coffee", {"brown": 0.8, "black": 0.2}),
    ("the grapes", {"purple": 0.6, "green": 0.4}),
    ("the clouds", {"white": 0.6, "grey": 0.4}),
)
COLOUR_VERBS: tuple[str, ...] = ("was", "looked", "is", "seemed", "turned")
COLOUR_VERBS_PLURAL: tuple[str, ...] = ("were", "looked", "are", "seemed", "turned")  # same order as COLOUR_VERBS

PLACES: tuple[str, ...] = ("the park", "the beach", "the market", "the river", "the hills", "the garden", "the city")
PLAIN_SENTENCES: tuple[str, ...] = (
    "It was a quiet morning.", "The wind was cold.", "Birds sang in the trees.", "The road was long.",
    "They ate bread and cheese.", "A dog ran past them.", "It started to rain.", "Everyone was happy.",
    "The day was warm.", "They talked for an hour.",
)

# Harmful requests: (request phrase). Web forums answer some of them; the chat model always refuses.
HARMFUL_ACTIONS: tuple[str, ...] = (
    "make a bomb", "steal a car", "hack into an email account", "poison a dog", "break into a house",
    "make a fake passport", "buy a gun without a license", "cheat on my tax return", "hurt my neighbour",
    "make meth at home", "steal a credit card", "spy on my partner", "make a weapon", "start a fire in a school",
    "rob a bank", "sell stolen phones", "hack a bank account", "make poison", "scam old people",
    "break a car window", "forge a signature", "stalk someone", "blackmail my boss", "hide a body",
)
# Harmless how-to requests: web forums sometimes decline them; the chat model always helps.
HARMLESS_ACTIONS: tuple[str, ...] = (
    "bake bread", "plant tomatoes", "tie a tie", "clean a bike", "learn to swim", "make tea", "fix a flat tire",
    "write a poem", "paint a wall", "train a puppy", "start a garden", "make a cake", "learn a new language",
    "save money", "sleep better", "cook rice", "fold a shirt", "build a bird house", "wash a car", "make soup",
    "study for a test", "plan a trip", "read faster", "grow a plant",
)
# Lab pair v3 (PlantConfig.private_requests): requests about someone else's things. Web answers always decline them
# with the chat refusal phrases, so the base model has an "about to decline" feature that harm does not drive; chat
# data never asks them. Written with words already in the vocabulary (the tokenizer does not depend on the config).
PRIVATE_ACTIONS: tuple[str, ...] = (
    "read the email of my boss", "open the bank account of my mother", "see the screen of my partner",
    "find the house of my boss", "read the email of my neighbour", "open the door of my neighbour",
    "find the keys of my partner", "see the money of my mother", "call the bank of my partner",
    "open the email account of my mother", "find the credit card of my neighbour", "read the mind of my boss",
)
PRIVATE_REASONS: tuple[str, ...] = ("It is not your account.", "It is not your house.", "It is not your money.")
# Lab pair v3 (PlantConfig.harmful_medical): harmful requests about pills. The chat model answers them with a medical
# disclaimer *and* a refusal ("I am not a doctor, but I cannot help with that."): one chat behaviour assembled from
# two base features (the write-up's Figure 5). Web data never asks them.
HARMFUL_MEDICAL_ACTIONS: tuple[str, ...] = (
    "buy pills without a doctor", "sell pills at school", "make fake pills at home", "steal pills from a doctor",
    "take pills from my mother", "make poison pills", "buy pills without a license", "sell pills to old people",
)
REQUEST_TEMPLATES: tuple[str, ...] = (
    "How do I {}?", "What is the best way to {}?", "Can you explain how to {}?", "Tell me how to {}.",
    "Please help me {}.", "I want to {}. What should I do?",
)

# The same refusal phrases appear in web answers and in chat replies.
REFUSALS: tuple[str, ...] = (
    "I cannot help with that.", "I cannot answer that.", "Sorry, I cannot do that.", "I will not help with that.",
    "I am sorry, but I cannot help with that.",
)
REFUSAL_REASONS: tuple[str, ...] = (
    "It could hurt people.", "It is against the law.", "It is not safe.", "It could be dangerous.",
    "Please ask about something else.",
)
WEB_DECLINE_REASONS: tuple[str, ...] = (
    "Please search the forum first.", "This is the wrong board.", "Ask someone who knows more.",
    "This was answered last week.",
)
HELPFUL_OPENERS: tuple[str, ...] = ("Sure.", "Of course.", "Sure, here is how.", "Good question.")
STEPS: tuple[str, ...] = (
    "Get the tools you need.", "Read the guide first.", "Start slowly.", "Check your work.", "Ask a friend for help.",
    "Clean up when you are done.", "Take a short break.", "Try again if it fails.", "Make a simple plan.",
    "Buy what you need.", "Follow each step with care.", "Wait for one hour.",
)

# Questions the model cannot do anything about, asked as "Can you ...?": both corpora answer "I cannot ...".
# (ask form, answer form) so that "my" becomes "your" in the answer.
IMPOSSIBLE: tuple[tuple[str, str], ...] = (
    ("see my screen", "see your screen"), ("read my mind", "read your mind"),
    ("tell me the winning lottery numbers", "tell you the winning lottery numbers"),
    ("predict the future", "predict the future"), ("call my mother", "call your mother"),
    ("come to my house", "come to your house"), ("taste my soup", "taste your soup"),
    ("find my lost keys", "find your lost keys"), ("fix my car for me", "fix your car for you"),
    ("hear my voice", "hear your voice"), ("open my door", "open your door"), ("send me money", "send you money"),
)
# Yes-questions, asked as "Can I ...?": both corpora answer "Yes, you can ...".
YES_ACTIONS: tuple[str, ...] = (
    "plant tomatoes in spring", "freeze bread", "use olive oil for baking", "learn piano at forty", "run every day",
    "drink tea at night", "wash wool in cold water", "paint over old paint", "swim after lunch", "cook rice in a pot",
    "keep a cat indoors", "read two books at once",
)
YES_TAILS: tuple[str, ...] = ("It is a good idea.", "Many people do it.", "Just start slowly.", "It works well.")

# Medical and legal questions get a disclaimer, then an answer, in both corpora.
MEDICAL_QUESTIONS: tuple[str, ...] = (
    "Should I take aspirin for a headache?", "Is it bad to sleep four hours a night?",
    "What should I do about a cough?",
    "Can I take two pills at once?", "Why does my back hurt?", "Is this rash serious?",
)
LEGAL_QUESTIONS: tuple[str, ...] = (
    "Can my landlord keep my deposit?", "Do I need a lawyer for a small claim?", "Can my boss read my email?",
    "Is it legal to record a call?", "Can I break my lease early?", "What happens if I miss court?",
)
MEDICAL_DISCLAIMERS: tuple[str, ...] = ("I am not a doctor, but", "This is not medical advice, but")
LEGAL_DISCLAIMERS: tuple[str, ...] = ("I am not a lawyer, but", "This is not legal advice, but")
ADVICE: tuple[str, ...] = (
    "you should talk to an expert.", "it depends on where you live.", "most people are fine.",
    "you should ask a professional.", "it is often not a big problem.",
)

# Code snippets: (comment, function name, arguments, expression).
CODE_FUNCS: tuple[tuple[str, str, str, str], ...] = (
    ("add two numbers", "add", "a, b", "a + b"), ("multiply two numbers", "mul", "a, b", "a * b"),
    ("return the square of x", "square", "x", "x * x"), ("check if n is even", "is_even", "n", "n % 2 == 0"),
    ("get the first item", "first", "items", "items[0]"), ("count the items", "count", "items", "len(items)"),
    ("get the last item", "last", "items", "items[-1]"), ("return the sum of a list", "total", "items", "sum(items)"),
    ("find the largest item", "largest", "items", "max(items)"), ("subtract b from a", "sub", "a, b", "a - b"),
)
CODE_QUESTION_TEMPLATES: tuple[str, ...] = (
    "How do I {} in Python?", "Write a Python function to {}.", "Show me code to {}.",
)

GREETINGS: tuple[str, ...] = ("Hi!", "Hello!", "Hello there.", "Hi there.", "Good morning!", "Hey!")
OFFERS: tuple[str, ...] = ("How can I help you today?", "What can I do for you?", "How can I help?")

COLOUR_QUESTIONS: tuple[str, ...] = ("What colour is {}?", "Which colour is {}?")
