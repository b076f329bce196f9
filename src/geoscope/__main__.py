from geoscope.cli import main

raise SystemExit(main())
