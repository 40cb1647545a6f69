import './base.css';
import 'uplot/dist/uPlot.min.css';
import './taskview.css';
import './forms.css';
