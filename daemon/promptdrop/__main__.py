from promptdrop.cli import main

raise SystemExit(main())
