import sys

from pipelines.jvm import main

sys.exit(main())
