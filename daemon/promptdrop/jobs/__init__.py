"""The job: what a prompt file becomes, from intake to the image in the folder."""
