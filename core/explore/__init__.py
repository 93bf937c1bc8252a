"""Reading a finished bundle: search by feature or token, prompt discovery, live text through the models.

search.py (torch-free), discover.py (scoring features on a text), prompts.py (the bundle's own
models and SAEs on new text).
"""
