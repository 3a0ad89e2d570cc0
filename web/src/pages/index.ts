// Every page registers its routes when imported.
import './overview';
import './datasets';
import './runs';
import './run';
import './compare';
import './models';
import './deployments';
import './jobs';
import './pipelines';
import './monitoring';
