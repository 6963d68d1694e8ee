"""What the user gives: images and ImageFolders, class lists, CoOp datasets, base/new splits and the
``descriptions.json`` file."""
