"""The faces: thin layers over the same functions.

    workflow.py    the guide's steps (generate, train, evaluate, compare, finetune, export, prompts)
    cli.py         the `trc` command over the workflow
    notebook.py    what the notebooks share: the workspace, quick datasets and models, parameter checks
    parameters.py  one check of every parameter, for the command line and the notebooks
    pipeline.py    notebooks 01-04 headless through papermill (`trc pipeline`, the guide's train.sh)
    site.py        the rendered tutorial (`make docs`)
"""
