import sys

from timellm.cli.main import main

sys.exit(main())
