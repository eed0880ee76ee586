from lmtemplate.cli import main

raise SystemExit(main())
